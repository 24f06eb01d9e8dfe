import os
import pyarrow.parquet as pq, pyarrow.compute as pc, pandas as pd, numpy as np, time, sys, xgboost as xgb
from sklearn.metrics import average_precision_score as ap, log_loss
t0=time.time()
MAY18=1621296000000; JUN1=1622505600000
TRAIN_FROM=int(sys.argv[1]) if len(sys.argv)>1 else 1615766400000  # Mar 15
pf=pq.ParquetFile(os.environ.get("ROWS", "bb0106.parquet"))
names=pf.schema_arrow.names
F=names[9:]
rng=np.random.default_rng(0)
parts=[]
for i in range(pf.num_row_groups):
    t=pf.read_row_group(i).to_pandas()
    t=t[(t.trigger=="tick")&(t.as_of_ms>=TRAIN_FROM)]
    if len(t)==0: continue
    hard=t.went_empty|t.went_full|t.empty_at_as_of|t.full_at_as_of
    tr=t.as_of_ms<MAY18
    r=rng.random(len(t))
    k=(~tr)|hard|(r<0.1)
    t=t[k].copy(); t["w"]=np.where((t.as_of_ms<MAY18)&~(t.went_empty|t.went_full|t.empty_at_as_of|t.full_at_as_of),10.0,1.0)
    parts.append(t.drop(columns=["system_id","trigger","observations"]))
df=pd.concat(parts,ignore_index=True); del parts
ex=pd.read_pickle("extra.pkl")
df=df.merge(ex,on=["station_id","as_of_ms"],how="left")
print("rows",len(df),time.time()-t0,flush=True)
df.to_pickle(f"frame_{TRAIN_FROM}.pkl")
