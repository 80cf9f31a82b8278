"""The quality stage: parity against the Keras original (with its gate statistics and int8 diagnosis),
benchmarks, inspection of model files, and the report. Reads what convert writes; depends on convert's recipe
table, data, core and the runtime."""
