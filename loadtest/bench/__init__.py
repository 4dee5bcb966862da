"""``make bench``: the redirect edge measured against a bare Granian app and nginx on this machine.

``run.py`` is the runner; ``wrk.py``, ``workload.py`` and ``report.py`` hold its pure parts (wrk
output, request sequences, the table), ``stack.py`` the processes it starts and ``seed.py`` the
links it creates.
"""
