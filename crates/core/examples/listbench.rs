use std::time::Instant;
fn main() {
    let dir = std::path::Path::new("/tmp/profdata/streams/chunks");
    let idx = workflow_core::stream::ChunkIndex::new(dir.to_path_buf());
    for _ in 0..5 {
        let t = Instant::now();
        let i = idx.stream_info("strm_X_user").unwrap();
        println!("cached info {i:?} {:?}", t.elapsed());

        let t = Instant::now();
        let n = std::fs::read_dir(dir).unwrap().count();
        let a = t.elapsed();
        let t = Instant::now();
        let v = workflow_core::stream::list_chunk_files(dir, "strm_X_user").unwrap();
        let b = t.elapsed();
        let t = Instant::now();
        let info = workflow_core::stream::stream_info(dir, "strm_X_user").unwrap();
        let c = t.elapsed();
        let t = Instant::now();
        let mut total = 0;
        for f in &v {
            total += std::fs::read(dir.join(f)).unwrap().len();
        }
        let d = t.elapsed();
        println!("count {n} {a:?} list {b:?} info {info:?} {c:?} read-all {d:?} {total}");
    }
}
#[allow(dead_code)]
fn cached() {}
