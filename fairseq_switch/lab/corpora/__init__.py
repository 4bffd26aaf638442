"""Raw text corpora: fetching them from their public sources, and preparing them for fairseq.

Fetching (raw text into data/ or data-raw/; standard library only), one module per script:
  - demo: Moby-Dick, the demo corpus (scripts/fetch_demo_corpus.py);
  - pretraining: State of the Union + Brown corpus (+ Moby-Dick) for span corruption
    (scripts/fetch_pretraining_corpus.py; the sources in pretraining_sources, the READMEs in
    pretraining_readme);
  - multilingual: the LibreOffice help in many languages (scripts/fetch_multilingual_corpus.py;
    the HTML extraction in help_pages, the Debian packages in help_packages);
  - downstream/: small text-to-text fine-tuning sets, one module per source
    (scripts/fetch_downstream_corpus.py);
  - text, files, downloads, paths: what the fetchers share (text normalization, writing files,
    npm pack / apt-get and one-line errors, the default folders).
Preparing (text into binarized fairseq data): prepare/, one module per script prepare_*_data.py.

Nothing here imports torch or fairseq: fairseq-preprocess runs as a subprocess.
"""
