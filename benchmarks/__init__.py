"""`make bench`: the service side by side with rclone and with the raw limits of the setup.

Starts its own moto server, fake-gcs-server and service process on free loopback ports,
seeds the data, runs the four scenarios of issue 4 (alternating contenders, repeated, medians
and ratios of medians), prints a table and writes the figures to bench-results/. It measures;
it never asserts. `python -m benchmarks --help` lists the options.
"""
