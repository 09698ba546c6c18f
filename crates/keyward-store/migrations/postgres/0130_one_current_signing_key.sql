-- At most one token signing key is current (not retired). Nodes racing to make the
-- first key, or to rotate the same one, are told apart by this index: the loser's
-- insert is refused and it uses the winner's key.

-- Before it, two nodes rotating at once could each leave a current key. Keep the newest
-- current; the others count as retired when it was made (they stay published while the
-- tokens they signed live).
UPDATE signing_keys
SET retired_at = (SELECT max(created_at) FROM signing_keys WHERE retired_at IS NULL)
WHERE retired_at IS NULL
  AND kid <> (SELECT kid FROM signing_keys WHERE retired_at IS NULL
              ORDER BY created_at DESC, kid DESC LIMIT 1);

CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;
