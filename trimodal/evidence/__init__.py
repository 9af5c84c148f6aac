"""Every figure the README quotes, rendered from a committed artifact.

``artifacts`` says which build output is committed where, ``regions`` finds the marked blocks of a document
(``<!-- evidence:NAME -->`` ... ``<!-- /evidence -->``), ``render`` writes each block from its artifacts and
``gates`` holds the accuracy and parity gates that ``make test`` asserts.
"""
