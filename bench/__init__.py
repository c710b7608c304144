"""Speed and memory benchmarks (``tools/benchmark.py {backbone,det,seg,pretrain}``)."""
