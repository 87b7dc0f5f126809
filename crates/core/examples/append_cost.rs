//! What the core itself costs per engine step (no JS, no thread hops): the events of a
//! 1,000-step run appended through the journal, timed. `cargo run --release --example
//! append_cost -- /dev/shm`
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;
use workflow_core::journal::Journal;
use workflow_core::world::local::LocalWorld;

fn req(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "/dev/shm".into());
    let dir = tempfile::tempdir_in(base)?;
    let world = Arc::new(LocalWorld::new(dir.path())?);
    let journal = Journal::new(Arc::clone(&world));
    for round in 0..3 {
        let created = world.create_event_sync(None, &json!({"eventType": "run_created", "specVersion": 3, "eventData": {"deploymentId": "d", "workflowName": "w", "input": {"__type": "Uint8Array", "data": "ZGV2bFtbMTAwMF1d"}}}).to_string())?;
        let run = created
            .event
            .as_ref()
            .and_then(|e| e["runId"].as_str())
            .unwrap_or_default()
            .to_string();
        let t = Instant::now();
        journal.append(
            &run,
            vec![req(json!({"eventType": "run_started", "specVersion": 3}))],
        );
        for i in 0..1000 {
            let step = format!("step_{:026}", i);
            let a = journal.append(&run, vec![
                req(json!({"eventType": "step_created", "specVersion": 3, "correlationId": step, "eventData": {"stepName": "step//native//increment", "workflowName": "workflow//native//many", "input": {"__type": "Uint8Array", "data": "ZGV2bFt7ImFyZ3MiOjEsImNsb3N1cmVWYXJzIjotMSwidGhpc1ZhbCI6LTF9LFsyXSwwXQ=="}}})),
                req(json!({"eventType": "step_started", "specVersion": 3, "correlationId": step, "eventData": {"stepName": "step//native//increment"}})),
            ]);
            let b = journal.append(&run, vec![req(json!({"eventType": "step_completed", "specVersion": 3, "correlationId": step, "eventData": {"stepName": "step//native//increment", "workflowName": "workflow//native//many", "result": {"__type": "Uint8Array", "data": "ZGV2bFsxXQ=="}}}))]);
            if a.failed.is_some() || b.failed.is_some() {
                return Err(format!("append failed: {:?} {:?}", a.failed, b.failed).into());
            }
        }
        journal.append(&run, vec![req(json!({"eventType": "run_completed", "specVersion": 3, "eventData": {"output": {"__type": "Uint8Array", "data": "ZGV2bFsxMDAwXQ=="}}}))]);
        println!(
            "round {round}: 1000 steps appended in {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        let f = workflow_core::world::fsio::step_floor(
            &dir.path().join(format!("floor{round}")),
            1000,
            500,
            600,
            false,
        )?;
        println!("round {round}: floor {f:.1} ms");
    }
    Ok(())
}
