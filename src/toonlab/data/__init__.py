"""Raw data in: the embedded demo crawl (`demo`, `anime_draw`), URL-list crawling
(`crawl`), safe decoding (`decode`) and the deduplicated manifest (`ingest`)."""
