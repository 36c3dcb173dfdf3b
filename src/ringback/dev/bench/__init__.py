"""`ringback bench`: the figures of the performance targets (docs/benchmarks.md, BENCHMARKS.md).

runner      the command: broker, one namespace per figure, bench.json / bench.md
throughput  (a) one worker vs a bare Faust agent vs a bare aiokafka loop
latency     (b) webhook accepted → SMS at the Twilio stand-in, load ladder, knee
gates       (c) gate firing delay with 100,000 open cases, RSS per 100,000 cases
restart     (d) restart to the first processed event with 1,000,000 table entries
scaling     1, 2, 3 workers on more partitions
workload    the traffic (seeded); harness: processes, producers, offsets, RSS
stats, report, profile   pure arithmetic, the table, py-spy profiles
passthrough the bare Faust pass-through agent (its own process)
"""
