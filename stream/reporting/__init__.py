"""`sentinel report`: per asset and per UTC day, posts, label shares, the sentiment index and the
incidents opened, from the daily roll-ups in Redis; optionally against daily closing prices.

Pure modules: `daily` (rows from roll-up tables), `prices` (the price CSV, returns, lead-lag),
`svg` (inline charts) and `render` (HTML, Markdown, CSV). I/O: `collect` (reads Redis), `deliver`
(sends the file through Apprise) and `sent` (which services accepted a report: a retry sends to
the others only).
"""
