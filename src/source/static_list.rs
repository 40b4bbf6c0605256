//! `static://`: a fixed list, known at once.

use std::net::IpAddr;

use super::Source;
use crate::instance::Instance;

pub struct StaticSource {
    list: Vec<Instance>,
}

impl StaticSource {
    pub fn new(items: &[(IpAddr, u16, u32)]) -> StaticSource {
        StaticSource {
            list: items
                .iter()
                .map(|&(ip, port, w)| Instance::new(ip, port, w))
                .collect(),
        }
    }
}

impl Source for StaticSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        Ok(self.list.clone())
    }

    fn describe(&self) -> String {
        "static list".into()
    }
}
