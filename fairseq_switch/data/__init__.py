"""Data building blocks. Import the module you need; this package face imports none of them, so that
data preparation (corpus, vocab, pairs, pair_encoding, sentinels: standard library only) loads without
torch or fairseq.

  - corpus: reading raw text files as documents (formats, gzip, bytes that are not UTF-8);
  - vocab: SentencePiece vocabularies whose ids equal fairseq's, and fairseq-preprocess;
  - pairs, pair_encoding: (input, target) files and their encoding for fine-tuning;
  - sentinels: the <extra_id_N> tokens of span corruption;
  - span_corruption, multilingual, teacher_cache: fairseq datasets and the distillation cache (torch).
"""
