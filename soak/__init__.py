"""`make soak`: the whole system for a fixed time under churn and faults (see __main__)."""
