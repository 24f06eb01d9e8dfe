import os
import pyarrow.parquet as pq, pandas as pd, numpy as np, time, xgboost as xgb
from sklearn.metrics import average_precision_score as ap, log_loss
MAY18=1621296000000; JUN1=1622505600000; G=300000
t=pq.read_table(os.environ.get("ROWS", "bb0106.parquet"),columns=["station_id","as_of_ms","trigger","departures_60m","arrivals_60m"]).to_pandas()
t=t[t.trigger=="tick"]
st=np.sort(t.station_id.unique()); si=pd.Series(np.arange(len(st)),index=st)
t0g=t.as_of_ms.min()//G; gi=(t.as_of_ms//G-t0g).values; s=si[t.station_id].values
T=gi.max()+1
def fut(col,k):
    M=np.full((len(st),T),np.nan,np.float32); M[s,gi]=t[col].values
    R=np.full_like(M,np.nan); R[:,:-k]=M[:,k:]; return pd.DataFrame({"station_id":t.station_id.values,"as_of_ms":t.as_of_ms.values,"fut_"+col:R[s,gi]})
f=fut("departures_60m",18).merge(fut("arrivals_60m",18),on=["station_id","as_of_ms"])
df=pd.read_pickle("frame_1615766400000.pkl").merge(f,on=["station_id","as_of_ms"],how="left")
cols=list(df.columns); feats=cols[cols.index("bikes"):cols.index("weather_age_minutes")+1]+["fut_departures_60m","fut_arrivals_60m"]
X=df[feats].values.astype(np.float32)
tr=(df.as_of_ms<MAY18).values; va=((df.as_of_ms>=MAY18)&(df.as_of_ms<JUN1)).values; te=(df.as_of_ms>=JUN1+86400000*0).values
for target,now in (("went_empty","empty_at_as_of"),("went_full","full_at_as_of")):
    y=df[target].values.astype(np.float32); new=~df[now].values; w=df.w.values
    p=dict(objective="binary:logistic",tree_method="hist",max_depth=8,eta=0.1,min_child_weight=20,subsample=0.8,eval_metric="logloss",nthread=2,seed=0)
    bst=xgb.train(p,xgb.DMatrix(X[tr],y[tr],weight=w[tr]),400,evals=[(xgb.DMatrix(X[va],y[va]),"va")],early_stopping_rounds=20,verbose_eval=False)
    pr=bst.predict(xgb.DMatrix(X[te]),iteration_range=(0,bst.best_iteration+1))
    n=new[te]
    print(f"{target} ORACLE (+ realised departures/arrivals in [t+30,t+90] min): June newAP {ap(y[te][n],pr[n]):.4f} ll {log_loss(y[te],pr):.5f}",flush=True)
