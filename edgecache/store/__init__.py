"""The on-disk cache: index (sqlite), blob files, single-flight fills, eviction.

The rule for every change of a stored copy
==========================================

A copy of an image is two things: its file `blobs/<id>` and its row in the index. Every change
of either — a fill's commit, eviction, an admin's removal, `cache-clear`, a copy Glance no
longer vouches for (a changed record, revalidation finding it deleted), quarantine of a corrupt
copy, start-up recovery — goes through `transitions.Transitions`; nothing else adds, replaces
or removes a file in `blobs/` or a blob row (hit counts and pins are updated in place). There:

1. **One image, one change at a time.** A change holds its image's lock across all its disk and
   index steps, so no step of one change lands between two steps of another (eviction's unlink
   after a newer fill's rename: the bug this rule came from). Each change runs as a task of its
   own, so a cancelled caller cannot stop it half-way; shutdown waits for those still running.
2. **Decisions are re-checked under the lock.** Every committed copy gets a new generation
   (`BlobEntry.generation`). A change decided about one copy (quarantine of the copy a reader
   found corrupt, dropping the copy that no longer matched Glance's record) names that
   generation and does nothing if a newer copy has replaced it meanwhile; eviction re-checks
   that nobody reads the copy; an eviction refused that way, or by generation, makes the
   evictor evict other copies for the room it counted on (`evict.py`). A fill that fails
   deletes only its own `incoming/<id>.part`, never `blobs/<id>`.
3. **Order of steps.** Commit: the fill fsyncs its partial file (its own, so before taking the
   lock); then, under the lock, drop the older copy's row, if any; rename into `blobs/` and
   fsync the directory; add the row. Removal (eviction, removal, quarantine): row first, then
   unlink (or move to `quarantine/`). So the index never names a file that is
   not whole, and a step that fails undoes what it left half-done (a commit whose rename or row
   failed deletes the file it left without a row).
4. **A crash between two steps** leaves a file without a row, or a partial file (and a power
   cut that loses the newest index writes, which WAL with synchronous=NORMAL allows, can leave
   a row whose file was removed). Start-up (`Transitions.recover`, before anything is served)
   mends the first and the last: it deletes rows whose file is missing or has the wrong size,
   and files without a row. So start-up finds either a whole verified copy or nothing.

Partial files are not copies. One that an earlier run left (a shutdown, a kill, a reboot) may
be kept to be resumed, never served: `partials.KeptPartials.load` (at start-up, before
anything is served) keeps those with a readable record of their image, no longer than it and
younger than `[cache] keep_partials`, and deletes everything else in incoming/. A fill of the
image takes it, hashes its bytes again and verifies the whole image like any fill before
committing it as above; one that fails verification is discarded.
"""
