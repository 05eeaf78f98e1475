"""Remote serving endpoints (vLLM, TGI, llama.cpp, OpenAI-compatible, modeldeck): health probes,
/metrics scraping and the rates and percentiles derived from it.

- metrics.py: tolerant metric-name matching and parsing with prometheus-client's parser
- derive.py: rates and p50/p95/p99 from two scrapes; replicas merged by summing buckets
- poller.py: concurrent, bounded polling with httpx; statuses up/degraded/down/stale
"""
