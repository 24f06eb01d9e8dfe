# Build station x grid matrices from tick rows, compute candidate features, save the sampled frame.
import pyarrow.parquet as pq, pandas as pd, numpy as np, time
t0=time.time()
base=pd.read_pickle("base.pkl")
# minutes since last change of bikes (from all rows incl. updates) and size of last change
base=base.sort_values(["station_id","as_of_ms"],kind="stable")
ch=base.groupby("station_id").bikes.diff()
changed=(ch.fillna(0)!=0)
base["chg_ms"]=np.where(changed,base.as_of_ms,np.nan)
base["chg_size"]=np.where(changed,ch,np.nan)
base["chg_ms"]=base.groupby("station_id").chg_ms.ffill()
base["chg_size"]=base.groupby("station_id").chg_size.ffill()
base["min_since_change"]=(base.as_of_ms-base.chg_ms)/60000.0
tick=base[base.trigger=="tick"].copy()
G=300000
t_min=tick.as_of_ms.min()//G; t_max=tick.as_of_ms.max()//G
tick["gi"]=(tick.as_of_ms//G - t_min).astype(np.int64)
stations=np.sort(tick.station_id.unique()); sidx={s:i for i,s in enumerate(stations)}
tick["si"]=tick.station_id.map(sidx).values
S=len(stations); T=int(t_max-t_min+1)
print("S,T",S,T, time.time()-t0)
def mat(col,dtype=np.float32):
    M=np.full((S,T),np.nan,dtype=dtype); M[tick.si.values,tick.gi.values]=tick[col].values.astype(dtype); return M
B=mat("bikes"); D=mat("docks"); WE=mat("went_empty"); WF=mat("went_full"); EN=mat("empty_at_as_of"); FN=mat("full_at_as_of")
def shift(M,k):
    R=np.full_like(M,np.nan); R[:,k:]=M[:,:-k]; return R
feats={}
day=288; week=7*day
feats["lag1d_went_empty"]=shift(WE,day); feats["lag1d_went_full"]=shift(WF,day)
feats["lag7d_went_empty"]=shift(WE,week); feats["lag7d_went_full"]=shift(WF,week)
# mean over last 7 days same time of day
def daymean(M,n):
    acc=np.zeros_like(M); cnt=np.zeros_like(M)
    for k in range(1,n+1):
        X=shift(M,k*day); ok=~np.isnan(X); acc[ok]+=X[ok]; cnt[ok]+=1
    with np.errstate(invalid="ignore"): return acc/cnt
feats["d7_went_empty"]=daymean(WE,7); feats["d7_went_full"]=daymean(WF,7)
# bikes at same time yesterday / last week, and the bikes 30 min later yesterday (known)
feats["lag1d_bikes"]=shift(B,day); feats["lag1d_bikes_p30"]=shift(B,day-6)
# longer windows via pandas rolling on the matrix (axis=1)
def roll(M,w,fn):
    df=pd.DataFrame(M.T); r=getattr(df.rolling(w,min_periods=1),fn)(); return r.values.T.astype(np.float32)
feats["min_bikes_2h"]=roll(B,24,"min"); feats["min_bikes_6h"]=roll(B,72,"min")
feats["max_bikes_2h"]=roll(B,24,"max"); feats["max_bikes_6h"]=roll(B,72,"max")
feats["min_docks_6h"]=roll(D,72,"min")
feats["empty_share_24h"]=roll(EN,288,"mean"); feats["full_share_24h"]=roll(FN,288,"mean")
print("feats", time.time()-t0)
for k,M in feats.items(): tick[k]=M[tick.si.values,tick.gi.values]
keep=["station_id","as_of_ms","min_since_change","chg_size"]+list(feats)
tick[keep].to_pickle("extra.pkl")
print("done",time.time()-t0)
