//! `msharectl`: the msharefs command line (to come; see the issues).

fn main() {
    eprintln!("msharectl: not implemented yet");
    std::process::exit(1);
}
