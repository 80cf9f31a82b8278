"""Child process for cold-start timing: import, load, one prediction, print peak RSS as JSON. Not public API."""
import json
import sys


def _main(argv):
    path, backend, threads, artifact = argv
    import edgeport_runtime as er
    from edgeport_runtime.bench import peak_rss_mb, sample_input

    m = er.load(path, backend=backend or None, num_threads=int(threads) or None, artifact=artifact or None)
    m.predict(sample_input(m, 1))
    print(json.dumps({"rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    _main(sys.argv[1:])
