import pandas as pd, numpy as np, time, xgboost as xgb
from sklearn.metrics import average_precision_score as ap, log_loss
MAY18=1621296000000; JUN1=1622505600000
df=pd.read_pickle("frame_1615766400000.pkl")
cols=list(df.columns); feats=cols[cols.index("bikes"):cols.index("weather_age_minutes")+1]
X=df[feats].values.astype(np.float32)
tr=(df.as_of_ms<MAY18).values; va=((df.as_of_ms>=MAY18)&(df.as_of_ms<JUN1)).values; te=(df.as_of_ms>=JUN1).values
rng=np.random.default_rng(0)
for target,now in (("went_empty","empty_at_as_of"),("went_full","full_at_as_of")):
    y=df[target].values.astype(np.float32); new=~df[now].values; w=df.w.values
    t0=time.time()
    p=dict(objective="binary:logistic",tree_method="hist",max_depth=8,eta=0.1,min_child_weight=20,subsample=0.8,eval_metric="logloss",nthread=2,seed=0)
    m=tr&new; mv=va&new
    bst=xgb.train(p,xgb.DMatrix(X[m],y[m],weight=w[m]),400,evals=[(xgb.DMatrix(X[mv],y[mv]),"va")],early_stopping_rounds=20,verbose_eval=False)
    mt=te&new
    pr=bst.predict(xgb.DMatrix(X[mt]),iteration_range=(0,bst.best_iteration+1))
    a=ap(y[mt],pr)
    # self-consistent AP: if pr were the true probabilities
    sims=[ap(rng.random(len(pr))<pr,pr) for _ in range(3)]
    print(f"{target} trained on new rows only: trees {bst.best_iteration+1} June newAP {a:.4f} ll(new) {log_loss(y[mt],pr):.5f}; mean p {pr.mean():.4f} rate {y[mt].mean():.4f}; AP if these p were the truth {np.mean(sims):.4f} ({time.time()-t0:.0f}s)",flush=True)
    np.save(f"pr_{target}.npy",pr)
