"""Readers: raw dataset files -> one canonical `InteractionData`.

One module per family of formats (docs/data_formats.md shows an example file of each); a new
format is a new module here, copied from the closest one, plus an entry in registry.FORMATS:
- movielens.py: the raw ml-100k release (`u.data`, `u.item`, `u.user`), the `::` format of ml-1m
  and ml-10m (`ratings.dat`, `movies.dat`, `users.dat`), and the CSV format of ml-latest(-small),
  ml-20m, ml-25m and ml-32m (`ratings.csv`, `movies.csv`, `tags.csv`).
- interactions.py: sequence files (one user per line, `user item item ...`, oldest item first)
  and pair files (one interaction per line, `user item`, optionally with rating/timestamp
  columns, chronological per user unless a timestamp column orders them).
- lcrec.py: LC-Rec JSON, `X.inter.json` `{"user": [item, ...]}` + `X.item.json`.
- atomic.py: RecBole atomic files: `name:type` header; `.inter` rows
  (`user_id item_id [timestamp] [rating]`) or the sequential benchmark variant
  (`user_id item_id_list item_id`), `.item` text table.
- amazon.py: Amazon Reviews (McAuley lab, 2014 and 2018 releases): the per-category review files
  (`Office_Products_5.json.gz`: one JSON review per line) and metadata files
  (`meta_Office_Products.json.gz`; the 2014 release writes Python literals instead of JSON).
- item_text.py: item-text join files (delimited or JSON) that add text fields to any of the above.
- assemble.py: the shared last step, codes in file order -> `InteractionData`.
- common.py: errors, `clean_text`, line reading, id numbering.
Files whose name ends in `.gz` are decompressed on the fly; a UTF-8 byte-order mark at the start
of a file is dropped.

Every reader numbers users 0.. in order of first appearance in the interaction file, orders each
user's interactions by time (stable, so equal times keep file order), numbers items 1.. in order of
first appearance when the users' sequences are read one after another, and keeps the raw ids.
Ratings (MovieLens, a pairs file's "rating" column, an atomic `rating:float` column, Amazon's
"overall") are kept in `InteractionData.ratings`; per-interaction text (Amazon's review text and
summary, MovieLens tags) in `InteractionData.reviews`, aligned with the items like the timestamps.
What a reader leaves out or fills in (items absent from the item table, tags without a rating)
is counted in `InteractionData.report`. Malformed input raises `DataFormatError` naming the file,
the line and the problem.
"""
from recjax.data.readers.amazon import AMAZON_ITEM_FIELDS, read_amazon_reviews
from recjax.data.readers.assemble import from_interactions
from recjax.data.readers.atomic import ATOMIC_TYPES, read_atomic
from recjax.data.readers.common import (TEXT_DTYPE, DataFormatError, MissingDataError, PathLike,
                                        clean_text)
from recjax.data.readers.interactions import INTERACTION_COLUMNS, read_pairs, read_sequences
from recjax.data.readers.item_text import TEXT_JOIN_KEYS, read_item_text
from recjax.data.readers.lcrec import read_lcrec_json
from recjax.data.readers.movielens import (ML100K_GENRES, ML1M_OCCUPATIONS, read_movielens_100k,
                                           read_movielens_1m, read_movielens_csv)

__all__ = [
    "AMAZON_ITEM_FIELDS", "ATOMIC_TYPES", "DataFormatError", "INTERACTION_COLUMNS",
    "ML100K_GENRES", "ML1M_OCCUPATIONS", "MissingDataError", "PathLike", "TEXT_DTYPE",
    "TEXT_JOIN_KEYS", "clean_text", "from_interactions", "read_amazon_reviews", "read_atomic",
    "read_item_text", "read_lcrec_json", "read_movielens_100k", "read_movielens_1m",
    "read_movielens_csv", "read_pairs", "read_sequences",
]
