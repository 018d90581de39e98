"""The benchmark: ``make bench`` (``python -m bench``), not part of ``make test``.

One run generates 1,000 seeded avatar-sized pictures (bench/images.py), starts
moto S3 with them, redis-server, the gateway (one worker per core, access log
off), two nginx anchors (static files; proxy_cache in front of S3), the shipped
deploy/nginx.conf in front of the gateway (with and without its micro-cache)
and a bare aiohttp reference, then drives each with wrk and bench/paths.lua,
and writes bench/RESULTS.md. ``python -m bench --profile`` records py-spy flame
graphs instead. Knobs: BENCH_DURATION, BENCH_QUICK=1 and the rest in
bench/settings.py. Everything it writes besides RESULTS.md is under bench/out/
(gitignored); everything it starts is stopped when it ends, fails or is
interrupted.
"""
