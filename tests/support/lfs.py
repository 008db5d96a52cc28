"""A Git LFS pointer: what a checkout without `lfs: true` leaves where a checkpoint should be."""

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:" + "4d7a" * 16 + "\n"
    "size 12345\n"
)
