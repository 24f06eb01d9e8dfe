import os
import pyarrow.parquet as pq, pandas as pd, numpy as np, time
t=time.time()
cols=["station_id","as_of_ms","trigger","went_empty","went_full","empty_at_as_of","full_at_as_of","bikes","docks","capacity","minutes_since_report","reports_60m","bikes_disabled","docks_disabled"]
df=pq.read_table(os.environ.get("ROWS", "bb0106.parquet"),columns=cols).to_pandas()
print(time.time()-t, len(df))
df.to_pickle("base.pkl")
print(df.trigger.value_counts())
s=df[df.station_id==df.station_id.iloc[0]].sort_values("as_of_ms")
print(s.head(20))
print(np.diff(s.as_of_ms.values[:2000]//60000)[:50])
