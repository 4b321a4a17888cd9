# Tiny SVG plot: node RSS (GiB) against transfers applied (applied sequence x 8189), one line per run.
import sys
W,H,L,B=760,420,60,40
runs=[]
for arg in sys.argv[2:]:
    name,path=arg.split('=',1)
    pts=[]
    for line in open(path).read().split('\n')[1:]:
        f=line.split()
        if len(f)>=4 and f[1].isdigit():
            pts.append((int(f[1])*8189/1e6,int(f[2])/1048576))
    # drop the samples after the load ended (the stop-time checkpoint)
    last=max(p[0] for p in pts); pts=[p for p in pts if p[0]<last] or pts
    runs.append((name,pts))
xmax=max(p[0] for _,pts in runs for p in pts); ymax=max(4.5,max(p[1] for _,pts in runs for p in pts))
X=lambda x:L+(W-L-20)*x/xmax; Y=lambda y:H-B-(H-B-20)*y/ymax
colors=['#d62728','#1f77b4','#2ca02c','#9467bd','#ff7f0e','#8c564b']
o=[f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
   f'<rect width="{W}" height="{H}" fill="white"/>']
for g in range(0,int(ymax)+1):
    o.append(f'<line x1="{L}" x2="{W-20}" y1="{Y(g)}" y2="{Y(g)}" stroke="#ddd"/><text x="{L-8}" y="{Y(g)+4}" text-anchor="end">{g}</text>')
step=max(1,int(xmax/10))
for t in range(0,int(xmax)+1,step):
    o.append(f'<text x="{X(t)}" y="{H-B+16}" text-anchor="middle">{t}</text>')
o.append(f'<line x1="{L}" x2="{W-20}" y1="{Y(2)}" y2="{Y(2)}" stroke="black" stroke-dasharray="4 3"/><text x="{W-22}" y="{Y(2)-4}" text-anchor="end">2 GiB target</text>')
o.append(f'<text x="{(W)/2}" y="{H-6}" text-anchor="middle">transfers applied (millions)</text>')
o.append(f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle">node RSS (GiB)</text>')
for i,(name,pts) in enumerate(runs):
    c=colors[i%len(colors)]
    o.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{" ".join(f"{X(x):.1f},{Y(y):.1f}" for x,y in pts)}"/>')
    o.append(f'<text x="{L+10}" y="{20+16*i}" fill="{c}">{name}</text>')
o.append('</svg>')
open(sys.argv[1],'w').write('\n'.join(o))
