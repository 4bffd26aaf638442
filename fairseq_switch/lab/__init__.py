"""The lab: everything that runs outside fairseq's own commands.

Corpora (fetch and prepare), reports, benchmarks, the transformers reference trainer, probe
selection and teacher precomputation. The lab imports the plugin; the plugin (everything in
`fairseq_switch` outside this package) never imports the lab (tests/test_imports.py checks it).
"""
