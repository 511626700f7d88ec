"""``python -m latentpriv`` (also what ``torchrun -m latentpriv`` runs)."""

from latentpriv.cli import main

if __name__ == "__main__":
    main()
