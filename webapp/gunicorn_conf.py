"""How gunicorn serves the app wherever it runs (`./run.sh`, compose, the Dockerfile, the fuzz script, the load
benchmark): `gunicorn -c python:webapp.gunicorn_conf webapp.wsgi`; command-line flags still override it.

Threaded workers (gthread), because a job page's live stream holds a thread for minutes. A worker takes a
connection only when one of its threads is free for it, and closes each connection after its response (no
keep-alive): waiting connections then queue once, in the kernel, in arrival order, and go to whichever worker
frees a thread first. With keep-alive, each client's connection stays with the worker that accepted it, so one
worker can hold more clients than the other while the other idles, and those clients wait longer: at 50 clients on
2 cores that roughly doubled the 95th-percentile wait (`benchmarks/web_load.py`, README "Benchmarks").
"""
worker_class = "gthread"
threads = 8
worker_connections = threads
keepalive = 0
timeout = 120
