"""The documented limits on one record (README, "Limits"), in one place.

Each keeps a single hostile or broken record from costing unbounded memory or time; a
record past one is rejected with the limit named, and the run goes on.
"""

MAX_RECORD_BYTES = 1024 * 1024  # one JSON line, one sidecar .json or .txt, a tar's .json/.txt member
MAX_JSON_DEPTH = 32  # nesting of objects and arrays inside one record
MAX_TEXT_CHARS = 20_000  # one alt-text or caption
MAX_TEXTS = 1_000  # alt-texts, or captions, in one record
MAX_ID_CHARS = 4096  # an image id
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # one encoded image (image_check's max_bytes may lower it)
MAX_IMAGE_PIXELS = 89_478_485  # one decoded image, width x height (PIL's own bomb limit)
MAX_EXTRA_BYTES = 16 * 1024 * 1024  # a WebDataset member recaption carries unread (KEY.cls, KEY.npy, ...)
MAX_EXTRAS = 16  # such members of one sample
INT_LIMIT = 2**63  # integers are 64-bit signed, as Parquet and Arrow hold them
