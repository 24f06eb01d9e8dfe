import pandas as pd, numpy as np
JUN1=1622505600000
b=pd.read_pickle("base.pkl"); b=b[(b.as_of_ms>=JUN1)&(b.trigger=="tick")]
n=b[~b.empty_at_as_of]
print("June new rows",len(n),"pos",n.went_empty.sum())
n=n.assign(bk=pd.cut(n.bikes,[-1,0,1,2,3,5,8,1000]), gap=pd.cut(n.minutes_since_report,[-1,5,15,30,60,120,1e9]))
print(n.groupby("bk",observed=True).went_empty.agg(["size","sum","mean"]))
print(n.groupby("gap",observed=True).went_empty.agg(["size","sum","mean"]))
# how many positives start with >=3 bikes
