"""Speed, memory and FLOP measurements (``tools/benchmark.py {backbone,det,seg,pretrain}``)."""
