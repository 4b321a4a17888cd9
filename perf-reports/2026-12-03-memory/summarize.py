import sys,glob,re,os
def load(d):
    rows=[]
    for line in open(d+'/samples.txt').read().split('\n')[1:]:
        f=line.split()
        if len(f)<6 or not f[1].isdigit(): continue
        rows.append((int(f[0]),int(f[1]),int(f[2]),int(f[3]),int(f[4]),int(f[6]) if len(f)>6 else 0))
    return rows
for d in sys.argv[1:]:
    rows=load(d)
    bench=open(d+'/bench.txt').read()
    m=re.search(r'\| throughput \| (\d+) \| \*\*(\d+)\*\* \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)',bench)
    tps=m.group(2) if m else '?'; p99=m.group(5) if m else '?'
    maps=open(d+'/maps.txt').read()
    hwm=re.search(r'VmHWM:\s+(\d+)',maps); anon_end=re.search(r'RssAnon:\s+(\d+)',maps)
    # RSS at checkpoints of applied inputs (~8189 transfers each)
    out=[]
    for target in (1,2,4,6,8,10,12):
        seq=target*1e6/8189
        r=[x for x in rows if x[1]>=seq]
        if r: x=r[0]; out.append(f"{target}M:{x[2]/1048576:.2f}/{x[3]/1048576:.2f}/{x[4]/1048576:.2f}")
    last=max(x[1] for x in rows); load_rows=[x for x in rows if x[1]<last]
    lmax=max(x[2] for x in load_rows)/1048576 if load_rows else 0
    st=open(d+'/uptime-start').read().split('load average:')[1].strip()
    print(os.path.basename(d), 'tps',tps,'p99ms',p99,'peak',f"{int(hwm.group(1))/1048576:.2f}" if hwm else '?','max_during_load',f"{lmax:.2f}",'anon_end',f"{int(anon_end.group(1))/1048576:.2f}" if anon_end else '?','load',st)
    print('   ', ' '.join(out))
