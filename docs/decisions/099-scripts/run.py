import pandas as pd, numpy as np, time, sys, xgboost as xgb, json
from sklearn.metrics import average_precision_score as ap, log_loss
MAY18=1621296000000; JUN1=1622505600000
frame=sys.argv[1]; targets=sys.argv[2].split(","); sets=sys.argv[3:]
df=pd.read_pickle(frame)
BASE=list(pd.read_pickle(frame).columns[7:95]) if False else None
cols=list(df.columns)
base_feats=cols[cols.index("bikes"):cols.index("weather_age_minutes")+1]
extra_all=cols[cols.index("weather_age_minutes")+1+1:]  # after w
extra_all=[c for c in cols[cols.index("w")+1:]]
tr=df.as_of_ms<MAY18; va=(df.as_of_ms>=MAY18)&(df.as_of_ms<JUN1); te=df.as_of_ms>=JUN1
def run(target,feats,tag):
    t0=time.time()
    now="empty_at_as_of" if target=="went_empty" else "full_at_as_of"
    X=df[feats].values.astype(np.float32); y=df[target].values.astype(np.float32)
    dtr=xgb.DMatrix(X[tr],y[tr],weight=df.w.values[tr]); dva=xgb.DMatrix(X[va],y[va])
    p=dict(objective="binary:logistic",tree_method="hist",max_depth=8,eta=0.1,min_child_weight=20,subsample=0.8,eval_metric="logloss",nthread=2,seed=int(__import__("os").environ.get("SEED","0")))
    bst=xgb.train(p,dtr,400,evals=[(dva,"va")],early_stopping_rounds=20,verbose_eval=False)
    out={}
    for nm,m in (("va",va),("te",te)):
        pr=bst.predict(xgb.DMatrix(X[m]),iteration_range=(0,bst.best_iteration+1))
        new=~df[now].values[m]
        out[nm]=(ap(y[m][new],pr[new]),log_loss(y[m],pr,labels=[0,1]))
    print(f"{tag:28s} {target:10s} trees {bst.best_iteration+1:4d} va newAP {out['va'][0]:.4f} ll {out['va'][1]:.5f} | JUNE newAP {out['te'][0]:.4f} ll {out['te'][1]:.5f}  ({time.time()-t0:.0f}s)",flush=True)
    return bst
for s in sets:
    tag,_,spec=s.partition("=")
    if spec=="base": feats=base_feats
    elif spec=="all": feats=base_feats+extra_all
    else: feats=base_feats+spec.split("+")
    for t in targets:
        b=run(t,feats,tag)
        if tag.startswith("imp"):
            g=b.get_score(importance_type="total_gain"); tot=sum(g.values())
            print(sorted(((v/tot,feats[int(k[1:])]) for k,v in g.items()),reverse=True)[:15])
