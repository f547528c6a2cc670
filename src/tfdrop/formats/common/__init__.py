"""Helpers every format shares: image headers (imageinfo), instance masks (masks, pixels), safe
XML parsing (xmlsafe) and the member read-ahead (prefetch). No format table entry lives here."""
