"""Report: renders report/index.html and report/report.md from the tables and figures."""
