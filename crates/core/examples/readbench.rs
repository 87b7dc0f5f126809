use std::time::Instant;
use workflow_core::stream::{StreamCursor, StreamMode};
fn main() {
    let dir = std::path::PathBuf::from("/tmp/profdata/streams/chunks");
    for _ in 0..3 {
        let t = Instant::now();
        let mut c = StreamCursor::new(
            std::sync::Arc::new(workflow_core::stream::ChunkIndex::new(dir.clone())),
            "strm_X_user",
            0,
            StreamMode::Objects,
        )
        .unwrap();
        let mut n = 0;
        loop {
            let b = c.read_available(256).unwrap();
            n += b.items.len();
            if b.done {
                break;
            }
        }
        println!("cursor read {n} in {:?}", t.elapsed());
    }
}
