"""`--lfs-pointers remote` against a real Git LFS server: objects pushed by the real git-lfs
client to giftless (127.0.0.1) with S3 storage on moto (127.0.0.2), read back by a clone made
without LFS content, as actions/checkout makes one without `lfs: true`.  Requests and bytes are
counted from the servers' own logs (support.lfs_server)."""

import hashlib
import os
import shutil

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, run
from pth_legacy_keys import fix, scan
from support.git import git

NO_SMUDGE = {"GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"}


def clone_without_lfs(repository, target, credential_helpers=()):
    """A clone of `repository`'s remote holding pointers, not objects, with the LFS endpoint in
    its own git configuration (a local-path remote has no URL to derive one from)."""
    git("clone", "-q", "-b", "main", str(repository.remote), str(target), cwd=target.parent, env=NO_SMUDGE)
    git("config", "lfs.url", repository.lfs_url, cwd=target, env=NO_SMUDGE)
    for helper in credential_helpers:
        git("config", "--add", "credential.helper", helper, cwd=target, env=NO_SMUDGE)
    return target


def lfs_objects_stored(clone):
    folder = clone / ".git" / "lfs" / "objects"
    return [name for _, _, names in os.walk(folder) for name in names] if folder.exists() else []


def same_verdict(remote, local):
    assert (remote.status, remote.reason, remote.format) == (local.status, local.reason, local.format)
    assert [(r.old, r.new) for r in remote.renames] == [(r.old, r.new) for r in local.renames]


def test_a_clone_without_lfs_content_gets_the_verdicts_for_a_few_blocks(lfs_server, tmp_path, full_size_rvc_model,
                                                                         capsys):
    files = {"models/voice.pth": full_size_rvc_model.read_bytes(), "models/small.pth": PARAMETRIZED.read_bytes(),
             "models/legacy.pth": LEGACY.read_bytes()}
    repository = lfs_server.make_lfs_repository(tmp_path / "repo", files)
    clone = clone_without_lfs(repository, tmp_path / "clone")
    assert (clone / "models/voice.pth").read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1")
    code, out = run(capsys, "check", "--lfs-pointers", "remote", clone / "models")
    assert code == 1 and out.count(": 208 parametrized weight-norm keys") == 1
    counts = lfs_server.counts()
    assert (counts.batch, counts.batch_download) == (1, 1)
    assert counts.storage_gets == counts.ranged_gets <= 3 + 1 + 1  # the 55 MB model: at most 3 blocks
    assert all(status == 206 for status in counts.ranged_statuses)
    assert sum(counts.ranged_bytes) <= (256 << 10) + 2 * PARAMETRIZED.stat().st_size
    assert sum(map(len, files.values())) > 200 * sum(counts.ranged_bytes)
    assert counts.secret_sent_to_storage == 0 and counts.storage_requests_with_authorization == 0
    for name in files:
        same_verdict(scan(clone / name, lfs_pointers="remote"), scan(repository.path / name))
    assert lfs_objects_stored(clone) == []


def test_a_token_server_is_asked_with_the_credential_git_gives_it(lfs_server_with_token, tmp_path):
    """giftless answers 403 without a credential; `git credential fill` then gives the token,
    for the LFS host only, and the storage never sees it."""
    server = lfs_server_with_token
    repository = server.make_lfs_repository(tmp_path / "repo", {"a.pth": PARAMETRIZED.read_bytes()})
    helpers = git("config", "--get-all", "credential.helper", cwd=repository.path).stdout.split("\n")
    clone = clone_without_lfs(repository, tmp_path / "clone", [h for h in helpers if h.startswith("!")])
    git("config", "credential.helper", "", cwd=clone)  # reset: none of the user's helpers first
    for helper in [h for h in helpers if h.startswith("!")]:
        git("config", "--add", "credential.helper", helper, cwd=clone)
    report = scan(clone / "a.pth", lfs_pointers="remote")
    assert report.status == "needs-fix", report.reason
    counts = server.counts()
    assert (counts.batch_download, counts.batch_refused) == (2, 1)
    assert counts.secret_sent_to_lfs == 1 and counts.secret_sent_to_storage == 0


def test_without_a_credential_a_token_server_is_one_line(lfs_server_with_token, tmp_path, capsys, monkeypatch):
    repository = lfs_server_with_token.make_lfs_repository(tmp_path / "repo", {"a.pth": PARAMETRIZED.read_bytes()},
                                                           keep_credential_helper=False)
    clone = clone_without_lfs(repository, tmp_path / "clone")
    git("config", "credential.helper", "", cwd=clone)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no user's credential helper either
    code, out = run(capsys, "check", "--lfs-pointers", "remote", clone / "a.pth")
    assert code == 2
    line = out.splitlines()[0]
    assert line.startswith(f"{clone / 'a.pth'}: not checked: Git LFS pointer whose object could not be found "
                           f"(the LFS server 127.0.0.1:{lfs_server_with_token.lfs_port} answered HTTP 40")
    assert line.endswith("(set PTH_LEGACY_KEYS_LFS_TOKEN, or a git credential for it))")
    assert lfs_server_with_token.token not in out


def test_fix_downloads_the_object_and_git_stores_the_fixed_one(lfs_server, tmp_path):
    repository = lfs_server.make_lfs_repository(tmp_path / "repo", {"a.pth": PARAMETRIZED.read_bytes(),
                                                                     "b.pth": LEGACY.read_bytes()})
    clone = clone_without_lfs(repository, tmp_path / "clone")
    report = fix(clone / "a.pth", lfs_pointers="remote")
    assert report.status == "fixed", report.reason
    assert fix(clone / "b.pth", lfs_pointers="remote").status == "ok"
    expected = tmp_path / "expected.pth"
    shutil.copyfile(PARAMETRIZED, expected)
    assert fix(expected).status == "fixed"
    assert (clone / "a.pth").read_bytes() == expected.read_bytes()
    counts = lfs_server.counts()
    assert counts.ranges.count("bytes=0-") == 1  # one whole download: a.pth's; b.pth needed no fix
    git("lfs", "install", "--local", cwd=clone)
    git("add", "a.pth", cwd=clone)
    staged = git("show", ":a.pth", cwd=clone).stdout
    assert f"oid sha256:{hashlib.sha256(expected.read_bytes()).hexdigest()}" in staged
    assert (clone / "b.pth").read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1")


def pull_request_clone(lfs_server, tmp_path, base_files, changed_files):
    """main with `base_files` and a pull request changing `changed_files`, pushed to the LFS
    server; then a clone without LFS content checked out as actions/checkout checks out a pull
    request with fetch-depth: 0 (the merge commit, detached, origin/main there)."""
    repository = lfs_server.make_lfs_repository(tmp_path / "repo", base_files)
    git("checkout", "-q", "-b", "pr", cwd=repository.path)
    for name, data in changed_files.items():
        (repository.path / name).write_bytes(data)
    git("add", "-A", cwd=repository.path)
    git("commit", "-q", "-m", "pull request", cwd=repository.path)
    git("push", "-q", "origin", "pr", cwd=repository.path, env={"GIT_TERMINAL_PROMPT": "0"})
    clone = clone_without_lfs(repository, tmp_path / "workspace")
    git("config", "user.name", "t", cwd=clone)
    git("config", "user.email", "t@example.com", cwd=clone)
    git("checkout", "-q", "--detach", "origin/main", cwd=clone, env=NO_SMUDGE)
    git("merge", "-q", "--no-ff", "-m", "Merge pr", "origin/pr", cwd=clone, env=NO_SMUDGE)
    lfs_server.reset_counts()
    return repository, clone


def test_the_action_checks_3_of_20_lfs_models_of_a_pull_request_without_lfs_content(lfs_server, tmp_path):
    pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")
    from support.action_runner import run_action

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = PARAMETRIZED.read_bytes()
    base = {f"models/m{i:02}.pth": LEGACY.read_bytes() + b"\0" * i for i in range(20)}  # 20 objects (refused
    base["models/m00.pth"] = LEGACY.read_bytes()  # ... when padded, but only 3 are examined)
    changed = {"models/m01.pth": data, "models/m02.pth": data + b"", "models/m03.pth": LEGACY.read_bytes()}
    repository, clone = pull_request_clone(lfs_server, tmp_path, base, changed)
    base_sha = git("rev-parse", "origin/main", cwd=clone).stdout.strip()
    sha = git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    result = run_action(os.path.join(root, "action.yml"), inputs={"changed-only": "true"}, workspace=clone,
                        event_name="pull_request", base_ref="main", sha=sha,
                        event={"number": 1, "pull_request": {"base": {"ref": "main", "sha": base_sha}}},
                        tmp=tmp_path / "runner")
    assert result.exit_code == 1, result.stdout + result.stderr
    errors = sorted(line.split("file=", 1)[1].split(",", 1)[0] for line in result.stdout.splitlines()
                    if line.startswith("::error "))
    assert errors == ["models/m01.pth", "models/m02.pth"]
    assert result.outputs["checked"] == "3" and result.outputs["offending"] == "2"
    counts = lfs_server.counts()
    assert counts.batch_download == 1
    assert counts.ranged_gets <= 3 * 2 and counts.storage_gets == counts.ranged_gets
    assert lfs_objects_stored(clone) == []


def test_the_actions_fix_mode_works_on_a_checkout_without_lfs_content(lfs_server, tmp_path):
    """fix mode downloads only the changed object that needs it, fixes it in the workspace, and
    leaves every other pointer a pointer."""
    pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")
    from support.action_runner import run_action

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = {f"models/m{i}.pth": LEGACY.read_bytes() + b"\0" * i for i in range(3)}
    repository, clone = pull_request_clone(lfs_server, tmp_path, base, {"models/m1.pth": PARAMETRIZED.read_bytes()})
    base_sha = git("rev-parse", "origin/main", cwd=clone).stdout.strip()
    result = run_action(os.path.join(root, "action.yml"), inputs={"mode": "fix", "changed-only": "true"},
                        workspace=clone, event_name="pull_request", base_ref="main",
                        sha=git("rev-parse", "HEAD", cwd=clone).stdout.strip(),
                        event={"number": 1, "pull_request": {"base": {"ref": "main", "sha": base_sha}}},
                        tmp=tmp_path / "runner")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.outputs["modified"] == "true"
    expected = tmp_path / "expected.pth"
    shutil.copyfile(PARAMETRIZED, expected)
    assert fix(expected).status == "fixed" and (clone / "models/m1.pth").read_bytes() == expected.read_bytes()
    for name in ("models/m0.pth", "models/m2.pth"):
        assert (clone / name).read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1")
    counts = lfs_server.counts()
    assert counts.ranges.count("bytes=0-") == 1 and counts.batch_download == 1
