// Data directories the benchmark is done with are moved aside, not removed, until the whole
// run ends. On ext4 without a journal (this VM's data disk) the inode allocator skips the
// inodes of files removed in the last 60–300 s (`recently_deleted` in the kernel), and every
// file created in the same block group meanwhile scans past all of them: removing the tens of
// thousands of files of one round slowed file creation in the next rounds 5–10× (a perf
// profile of our workload c in that state: most of its kernel time in `recently_deleted`).
// That state is caused by the benchmark's own clean-up, between measurements, and it only
// hits the systems that keep a file per record; so no directory is removed while anything
// is measured. A rename into the trash frees no inode.
//
// The trash is `$WFN_BENCH_TRASH` (set by the top-level run and inherited by its children);
// without it, or across file systems, a directory is removed at once.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

let seq = 0

/** Creates this run's trash (on the data disk) and empties it when the process exits. */
export function openTrash() {
  if (process.env.WFN_BENCH_TRASH) return process.env.WFN_BENCH_TRASH
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-bench-trash-'))
  process.env.WFN_BENCH_TRASH = dir
  process.on('exit', () => emptyTrash())
  return dir
}

/** Moves `dir` into the trash (removes it when there is none, or it is on another file system). */
export function discard(dir) {
  const trash = process.env.WFN_BENCH_TRASH
  if (!fs.existsSync(dir)) return
  if (trash && fs.existsSync(trash)) {
    try {
      fs.renameSync(dir, path.join(trash, `${process.pid}-${seq++}-${path.basename(dir)}`))
      return
    } catch {
      // EXDEV (tmpfs) or anything else: removed now
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
}

/** Removes the trash and everything in it (the end of the run). */
export function emptyTrash() {
  const trash = process.env.WFN_BENCH_TRASH
  if (trash && path.basename(trash).startsWith('wfn-bench-trash-')) fs.rmSync(trash, { recursive: true, force: true })
}
