import sys
for d in sys.argv[1:]:
    rows=[]
    for line in open(d+'/samples.txt').read().split('\n')[1:]:
        f=line.split()
        if len(f)>=6 and f[1].isdigit() and f[2].isdigit():
            rows.append((int(f[0]),int(f[1]),int(f[2])/1048576,int(f[3])/1048576,int(f[5])/1048576))
    log=open(d+'/serve.log').read()
    import re
    ck=[int(m) for m in re.findall(r'checkpoint at sequence (\d+) \(',log)]
    first=ck[0] if ck else None
    stalls=[int(m) for m in re.findall(r'stalled the business logic (\d+) us',log)]
    took=[int(m) for m in re.findall(r'verified in (\d+) ms',log)]
    pre=[r for r in rows if first is None or r[1]<first]
    post=[r for r in rows if first is not None and r[1]>=first]
    def band(rs):
        v=sorted(r[2] for r in rs)
        if not v: return '-'
        return f"{v[len(v)//10]:.2f}-{v[(len(v)*9)//10]:.2f} (max {v[-1]:.2f}, n={len(v)})"
    last=max(r[1] for r in rows)
    print(d, f"last seq {last} = {last*8189/1e6:.1f} M; checkpoints {len(ck)} first at seq {first}; stalls us {stalls}; write+verify ms {took}")
    print("  before first ckpt RSS GiB p10-p90", band(pre))
    print("  after  first ckpt RSS GiB p10-p90", band(post))
    print("  HWM GiB", max(r[4] for r in rows))
    # by 20M buckets
    b={}
    for r in post:
        k=int(r[1]*8189/1e6//20)*20
        b.setdefault(k,[]).append(r[2])
    print("  post by 20M:", ' '.join(f"{k}M:{min(v):.2f}-{max(v):.2f}" for k,v in sorted(b.items())))
