// Placeholder until the benchmark lands: accepts --demo and exits.
int main() { return 0; }
