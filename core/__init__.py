"""The toolkit's ground floor: paths and the cache dir, filesystem rules (markers, --force, atomic dirs),
TensorFlow set-up, and config files. Depends on the runtime only; every stage may import it, it imports no stage."""
