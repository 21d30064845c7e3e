"""The methods under test, one module each: block-size schedules, EDBA, growth, K-FAC, LR schedules."""
