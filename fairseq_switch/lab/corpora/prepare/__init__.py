"""Raw text -> binarized fairseq data, one module per scripts/prepare_*_data.py.

  - pretraining: one corpus for span corruption (task span_corruption);
  - multilingual: one shared vocabulary, per-language splits (task multilingual_span_corruption;
    the languages in `languages`, the SentencePiece text mixture in `mixture`);
  - downstream: (input, target) pairs for fine-tuning with the pretraining vocabulary (task text_to_text);
  - demo: the Moby-Dick next-sentence pairs (fairseq's translation task; sentences in `sentences`).
The steps they share: `steps` (what is up to date), `documents` (held-out splits, SentencePiece text
pieces), `options` (command-line options). The building blocks (reading text, SentencePiece, pairs)
are in fairseq_switch.data.
"""
