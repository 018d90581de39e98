"""The capacity model: ``python -m bench.capacity`` (a simulation, not a load test).

How many replicas, how much memory and disk, how many Redis operations and
S3 requests a workload needs, from its shape (objects, sizes, popularity,
request rate) and the deployment (replicas, workers, memory.max_bytes,
disk.max_bytes, the nginx micro-cache, a CDN in front).

Two ways to the same figures (docs/CAPACITY.md says when to use which):

``model.predict`` (the default): analytic, per object and vectorised with NumPy.
    Each LRU is solved with Che's approximation generalised to objects of
    different sizes (a characteristic time T with
    sum_i size_i * P(i present | T) = capacity), with purges as a second
    Poisson process that empties an entry, and TTL caches (the micro-cache,
    a CDN) with the renewal formula hit = rate*ttl / (1 + rate*ttl). Its cost
    depends on the number of objects, not of requests: 10^6 objects take
    2-3 s whatever the request count (10^7 requests or 10^10). Sets above
    --modelled (2 * 10^6) are modelled by their most popular 10^6 objects and
    a weighted random sample of the rest (workload.sampled_synthetic).

``exact.simulate``: a trace replayed request by request through the same
    layers (consistent hash -> a random worker's memory LRU -> the replica's
    disk LRU, by bytes, with TTLs and purges), as the gateway runs them.
    Pure Python, 1.5-6 µs per request (10^7 requests over 10^6 objects: about a
    minute on the busy 2-core test machine): for checking the analytic model
    and replaying the bench's long-tail trace.

Routing is nginx's ``hash $uri consistent`` exactly (``hashring.KetamaRing``).
"""
