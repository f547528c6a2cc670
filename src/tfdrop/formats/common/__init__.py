"""Helpers every format shares: image headers (imageinfo), instance masks (masks, pixels), safe
XML parsing (xmlsafe), the member read-ahead (prefetch) and what writers lose (losses). No
format table entry lives here."""
