"""Alerting: rules over the metrics (`rules`), the manager that moves them through
ok, pending, firing and resolved (`manager`), and the notifiers that hear of it (`notifiers`).
"""
