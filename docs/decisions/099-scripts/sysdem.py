import os
import pyarrow.parquet as pq, pandas as pd, numpy as np
G=300000
t=pq.read_table(os.environ.get("ROWS", "bb0106.parquet"),columns=["station_id","as_of_ms","trigger","departures_60m","arrivals_60m","departures_15m"]).to_pandas()
t=t[t.trigger=="tick"]
g=t.groupby("as_of_ms")[["departures_60m","departures_15m"]].sum().sort_index()
idx=pd.RangeIndex(g.index.min(),g.index.max()+G,G)
g=g.reindex(idx)
day=288; week=7*day
d60=g.departures_60m
out=pd.DataFrame(index=idx)
out["sys_dep_60m"]=d60
out["sys_dep_15m"]=g.departures_15m
out["sys_dep_60m_vs_7d"]=(d60+1)/(d60.shift(week)+1)
out["sys_dep_60m_vs_1d"]=(d60+1)/(d60.shift(day)+1)
# departures over the last 6 h (sum of 60m windows every 12 ticks) vs a week ago
d6h=sum(d60.shift(12*k) for k in range(6))
out["sys_dep_6h_vs_7d"]=(d6h+1)/(d6h.shift(week)+1)
out.index.name="as_of_ms"; out=out.reset_index()
# station-level ratio to its own last week
st=t[["station_id","as_of_ms","departures_60m"]].copy()
st["as_of_prev"]=st.as_of_ms-week*G
prev=st[["station_id","as_of_ms","departures_60m"]].rename(columns={"as_of_ms":"as_of_prev","departures_60m":"dep60_7d"})
st=st.merge(prev,on=["station_id","as_of_prev"],how="left")
st["st_dep_60m_7d"]=st.dep60_7d
ex=st[["station_id","as_of_ms","st_dep_60m_7d"]].merge(out,on="as_of_ms",how="left")
ex.to_pickle("sys.pkl"); print(out.describe().T)
