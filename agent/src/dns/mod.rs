//! Names for the world outside: DNS answers pods received, as the datapath
//! copies them ([`weir_ebpf::abi::DnsEvent`]), parsed ([`parse()`]) and kept
//! per pod in a time-versioned name <-> address map ([`names`]) that flow
//! records and the graph ask which names an address had for a pod when a
//! flow began.

pub mod names;
pub mod parse;

pub use self::{
    names::{Names, NamesOptions},
    parse::{Answer, ParseError, Rcode, parse},
};
