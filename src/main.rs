fn main() {
    println!("vsctl");
}
