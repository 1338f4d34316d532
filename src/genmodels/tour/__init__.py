"""The tour: every lecture section run, measured and shown on one offline HTML page.

``lecture`` holds what the lecture itself says (titles, equations as MathML, citations) and
the pictures that need no training; ``page`` renders ``results.json`` into ``index.html``.
"""
