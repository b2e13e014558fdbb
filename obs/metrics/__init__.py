"""Metrics: the `MetricsCollector` (`collector`), its time series (`timeseries`),
the quantile sketch behind its percentiles (`quantiles`) and pricing (`_pricing`).
"""
