//! The `snapshot_file` option: each new list saved atomically, read back when the first fetch
//! fails at start.

use std::io::Write;

use serde_json::{json, Value};

use crate::instance::{parse_ip, Instance};

/// Writes `list` to `path` through a temporary file and a rename, so that a reader never sees
/// half a file.
pub fn save(path: &str, list: &[Instance]) -> std::io::Result<()> {
    let items: Vec<Value> = list
        .iter()
        .map(|i| json!({"ip": i.ip_str(), "port": i.port, "weight": i.weight}))
        .collect();
    let body = serde_json::to_vec(&json!({"format": "easdirect-snapshot-1", "instances": items}))?;
    let tmp = format!("{path}.tmp{}", std::process::id());
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads a saved list; the error says why it cannot be used, for `wait_ready`'s message.
pub fn load(path: &str) -> Result<Vec<Instance>, String> {
    let body =
        std::fs::read(path).map_err(|e| format!("snapshot_file \"{path}\" not used: {e}"))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("snapshot_file \"{path}\" not used: not JSON ({e})"))?;
    let items = value
        .get("instances")
        .and_then(Value::as_array)
        .filter(|_| value.get("format").and_then(Value::as_str) == Some("easdirect-snapshot-1"))
        .ok_or_else(|| format!("snapshot_file \"{path}\" not used: not an easdirect snapshot"))?;
    let list: Vec<Instance> = items
        .iter()
        .filter_map(|item| {
            let ip = parse_ip(item.get("ip")?.as_str()?)?;
            let port = u16::try_from(item.get("port")?.as_u64()?)
                .ok()
                .filter(|&p| p > 0)?;
            let weight = u32::try_from(item.get("weight")?.as_u64()?).ok()?;
            Some(Instance::new(ip, port, weight))
        })
        .collect();
    if !list.iter().any(|i| i.weight > 0) {
        return Err(format!(
            "snapshot_file \"{path}\" not used: it lists no instance of positive weight"
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_list_loads_back() {
        let dir = std::env::temp_dir().join(format!("easdirect-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list.json");
        let path = path.to_str().unwrap();
        let list = vec![
            Instance::new("10.0.0.1".parse().unwrap(), 80, 5),
            Instance::new("::1".parse().unwrap(), 81, 0),
        ];
        save(path, &list).unwrap();
        assert_eq!(load(path).unwrap(), list);
        std::fs::write(path, b"{corrupt").unwrap();
        assert!(load(path).unwrap_err().contains("not JSON"));
        assert!(load(&format!("{path}.missing"))
            .unwrap_err()
            .contains("not used"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
