//! Prints the `RecordingPolicy` CRD as YAML; `make generate` writes it into the Helm chart.
#![forbid(unsafe_code)]

fn main() {
    print!("{}", earshot_crds::crd_yaml());
}
