"""Small, real text-to-text fine-tuning sets (summarization + classification); see `build`.

One module per source: `debian` (package descriptions -> synopsis), `bbc` (BBC news: topic and
headline), `spam` (SpamAssassin mails); `extraction` holds what they extract, `splits` the seeded
test/valid/train split, `settings` the bundled sets' settings and `build` the command line.
"""
