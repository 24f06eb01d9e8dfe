import pandas as pd, numpy as np, time, sys, xgboost as xgb
from sklearn.metrics import average_precision_score as ap, log_loss
MAY18=1621296000000; JUN1=1622505600000; JUN16=JUN1+15*86400000
df=pd.read_pickle("frame_1615766400000.pkl")
cols=list(df.columns); feats=cols[cols.index("bikes"):cols.index("weather_age_minutes")+1]
rng=np.random.default_rng(1)
hard=(df.went_empty|df.went_full|df.empty_at_as_of|df.full_at_as_of).values
X=df[feats].values.astype(np.float32)
te=(df.as_of_ms>=JUN16+1800000).values
def fit(trm,vam,y,w,tag,new_only=None):
    t0=time.time()
    p=dict(objective="binary:logistic",tree_method="hist",max_depth=8,eta=0.1,min_child_weight=20,subsample=0.8,eval_metric="logloss",nthread=2,seed=0)
    bst=xgb.train(p,xgb.DMatrix(X[trm],y[trm],weight=w[trm]),400,evals=[(xgb.DMatrix(X[vam],y[vam]),"va")],early_stopping_rounds=20,verbose_eval=False)
    pr=bst.predict(xgb.DMatrix(X[te]),iteration_range=(0,bst.best_iteration+1))
    print(f"{tag:40s} trees {bst.best_iteration+1} late-June newAP {ap(y[te][new_only[te]],pr[new_only[te]]):.4f} ll {log_loss(y[te],pr):.5f} ({time.time()-t0:.0f}s)",flush=True)
for target,now in (("went_empty","empty_at_as_of"),("went_full","full_at_as_of")):
    y=df[target].values.astype(np.float32); new=~df[now].values
    w=df.w.values.copy()
    # A: the Mar15-May17 model
    trA=(df.as_of_ms<MAY18).values; vaA=((df.as_of_ms>=MAY18)&(df.as_of_ms<JUN1)).values
    fit(trA,vaA,y,w,f"{target} A trained Mar15-May17",new)
    # B: in-June (sample easy rows of June 1-12 like training), valid Jun 12-15.5
    j=(df.as_of_ms>=JUN1)&(df.as_of_ms<JUN1+11*86400000)
    r=rng.random(len(df)); wB=np.where(hard,1.0,10.0)
    trB=(j.values&(hard|(r<0.1))); vaB=((df.as_of_ms>=JUN1+11*86400000)&(df.as_of_ms<JUN16)).values
    fit(trB,vaB,y,wB,f"{target} B trained Jun1-12 only",new)
    # C: both
    fit(trA|trB,vaB,y,np.where(trA,w,wB),f"{target} C Mar15-Jun12",new)
